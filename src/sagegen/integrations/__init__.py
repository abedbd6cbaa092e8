"""What plugs into other systems' extension points: verl's tool and config machinery, and importers
of foreign runs (the authors' release).

Modules here may import the foreign package they extend; nothing in sagegen's core imports them.
"""
