"""piko.store"""
