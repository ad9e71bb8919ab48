"""anomalyseg.data"""
