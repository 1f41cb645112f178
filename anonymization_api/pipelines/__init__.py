"""Decode -> localise -> anonymise -> encode, for images and videos."""
