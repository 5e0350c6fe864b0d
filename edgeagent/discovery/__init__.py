"""Hardware discovery: devicetree and host facts in, an immutable Inventory out."""
