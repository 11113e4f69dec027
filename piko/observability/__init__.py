"""piko.observability"""
