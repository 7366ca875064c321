"""teleop"""
