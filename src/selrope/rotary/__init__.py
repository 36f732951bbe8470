"""selrope.rotary"""
