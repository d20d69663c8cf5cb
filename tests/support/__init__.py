"""Helpers the tests share: repositories of this project, models to serve, images, graph walks."""
