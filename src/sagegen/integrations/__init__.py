"""What plugs into other systems' extension points (verl's tool and config machinery).

Modules here import the foreign package they extend; nothing in sagegen's core imports them.
"""
