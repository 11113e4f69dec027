"""piko.compute"""
