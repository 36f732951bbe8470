"""selrope.analysis"""
