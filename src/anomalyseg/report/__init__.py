"""anomalyseg.report"""
