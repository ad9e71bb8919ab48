"""anomalyseg.engine"""
