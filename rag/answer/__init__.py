"""Passages -> answer: the ``Answerer`` that searches, chooses a provider, streams events and verifies every
citation (``answering``, ``events``, ``citations``), the quoting and layout rules of extractive answers
(``quotes``, ``layout``), personas (``personas``), retry timing shared by the network providers (``retrying``)
and the providers themselves (``providers``).

May import: ``rag.search`` and everything below it.
"""
