"""Media files the service reads and writes: images (`images`) and videos (`video`)."""
