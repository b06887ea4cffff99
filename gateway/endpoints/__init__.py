"""What the gateway answers itself: login, refresh, logout and JWKS (auth.py), and forward-auth."""
