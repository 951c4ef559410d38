"""Reviewed changes: drafts made by the monthly maintenance assets, accepted by a person."""
