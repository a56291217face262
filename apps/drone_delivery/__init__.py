"""The Drone Delivery reference application: a choreography of four services."""
