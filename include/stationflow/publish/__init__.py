"""Delivering finished files to their archives (the ICOS Carbon Portal's ETC endpoint)."""
