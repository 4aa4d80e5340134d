"""``callveil doctor``: checks an installer runs beside the PBX, each saying what to fix."""
