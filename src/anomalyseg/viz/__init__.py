"""anomalyseg.viz"""
