"""What plugs into other systems: importers of foreign runs (the authors' release), and the like."""
