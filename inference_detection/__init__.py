"""Detection models (faces, text, licence plates, persons) and their serving."""
