"""selrope.training"""
