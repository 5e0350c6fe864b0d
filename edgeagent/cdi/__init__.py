"""The CDI specs the agent writes itself (issue 13): spec.py builds them (pure), writer.py
writes them atomically, component.py keeps them current."""
