"""anomalyseg.scoring"""
