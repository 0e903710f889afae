"""The Claude provider: the streaming client (``client``), its model table and prices (``models``) and how its
API errors become events (``errors``).
"""
