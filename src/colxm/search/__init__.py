"""Search: query token vectors -> ranked (segment, document, score) over compressed segments."""
from colxm.search.data import SegmentData
from colxm.search.searcher import Hit, Searcher, SearchParams

__all__ = ["Hit", "SearchParams", "Searcher", "SegmentData"]
