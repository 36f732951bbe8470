"""selrope.models"""
