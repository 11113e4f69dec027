"""piko.persistence"""
