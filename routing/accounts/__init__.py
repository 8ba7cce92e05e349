"""End users' own way in: invitations by email, password resets, and the links that let them set a password."""
