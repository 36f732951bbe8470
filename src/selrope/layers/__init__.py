"""selrope.layers"""
