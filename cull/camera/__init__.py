"""Live focus assist and shot screening (see cull.camera.run)."""
