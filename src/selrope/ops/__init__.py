"""selrope.ops"""
