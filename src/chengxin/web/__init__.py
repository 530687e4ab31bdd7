"""Server-rendered pages for people: the public lookup, the published policy, the subject portal.

The pages sit on the same ``service`` layer as the HTTP API and add no rule
of their own: a subject sees its own record and who consulted it; anyone
sees the published policy and the public lists with masked identifiers.
"""
