"""piko.http"""
