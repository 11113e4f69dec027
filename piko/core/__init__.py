"""piko.core"""
