"""stationflow: environmental-station data from the field to the archives.

Plain functions for collect -> refine -> publish; the DAGs in ``dags/`` only wire them.
"""

__version__ = "0.1.0"
