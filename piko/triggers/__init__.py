"""piko.triggers"""
