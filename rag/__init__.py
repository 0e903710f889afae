"""Architecture knowledge assistant: ingestion, hybrid retrieval and grounded answers.

Data flows one way: files -> documents -> chunks -> vectors -> store -> passages -> answer.
"""

__version__ = "0.1.0"
