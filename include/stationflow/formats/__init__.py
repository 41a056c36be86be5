"""Logger file formats (TOA5, TOB1, LI-COR .ghg) and ICOS ETC file names.

Every reader yields a ``Table``: TOA5-style text rows addressed inside one byte buffer,
their timestamps as int64 nanoseconds, and the source line of each row.
"""
