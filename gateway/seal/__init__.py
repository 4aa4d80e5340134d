"""Keys and ciphers live here and nowhere else in callveil."""
