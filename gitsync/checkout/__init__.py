"""checkout"""
