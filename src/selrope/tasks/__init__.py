"""selrope.tasks"""
