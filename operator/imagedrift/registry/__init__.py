"""Registry adapters: one client per backend behind ``RegistryClient`` (see ``base``)."""
