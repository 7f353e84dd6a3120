"""Tokenising product text for search, in Chinese and English.

MongoDB's text index does not segment Chinese, so the catalog stores its own
tokens in an ordinary (multikey) index: jieba's search-mode segmentation plus
the character bigrams of every run of CJK characters (so a word jieba cuts
differently in a title and in a query still meets), and lower-cased ASCII
words of two or more characters. Pure functions, no I/O."""
from __future__ import annotations

import logging
import re

import jieba

jieba.setLogLevel(logging.WARNING)

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# Function words that would match nearly every product.
STOPWORDS = frozenset({"的", "了", "和", "与", "及", "或", "是", "在", "the", "and", "for", "with", "of",
                       "an", "to", "in", "on"})


def initialize() -> None:
    """Load jieba's dictionary now (about a second) rather than on the first request."""
    jieba.initialize()


def _keep(token: str) -> bool:
    if token in STOPWORDS:
        return False
    if _CJK_CHAR.search(token):
        return True
    return len(token) >= 2


def tokenize(text: str | None) -> list[str]:
    """The distinct search tokens of `text`, in first-seen order."""
    if not text:
        return []
    lowered = text.lower()
    seen: dict[str, None] = {}
    for piece in jieba.cut_for_search(lowered):
        for word in _WORD.findall(piece):
            if _keep(word):
                seen.setdefault(word, None)
    for run in _CJK_RUN.findall(lowered):
        if len(run) == 1 and _keep(run):
            seen.setdefault(run, None)
        for i in range(len(run) - 1):
            seen.setdefault(run[i:i + 2], None)
    return list(seen)


def document_tokens(title: str, description: str | None) -> tuple[list[str], list[str]]:
    """(title tokens, all tokens of title and description) for a product."""
    title_tokens = tokenize(title)
    all_tokens = dict.fromkeys(title_tokens)
    all_tokens.update(dict.fromkeys(tokenize(description)))
    return title_tokens, list(all_tokens)


_SORTS = {
    "relevance": [("score", -1), ("sales", -1), ("rating_avg", -1)],
    "price": [("price", 1)],
    "price_asc": [("price", 1)],
    "price_desc": [("price", -1)],
    "sales": [("sales", -1)],
    "rating": [("rating_avg", -1), ("rating_count", -1)],
    "newest": [("published_at", -1)],
}


def pipeline(query: str | None, category: str | None, sort: str, page: int, page_size: int) -> list[dict]:
    """The aggregation that finds published products matching any token of
    `query` (all published products without one), in `category`, scored by
    how many query tokens the product has (a title token counts twice), sorted
    by `sort` with the id as the last key so pages are stable."""
    match: dict = {"status": "published"}
    if category:
        match["category"] = category
    tokens = tokenize(query)
    if query and query.strip():
        match["search_tokens"] = {"$in": tokens}
    stages: list[dict] = [{"$match": match}]
    if tokens:
        stages.append({"$addFields": {"score": {"$add": [
            {"$size": {"$setIntersection": ["$search_tokens", tokens]}},
            {"$size": {"$setIntersection": ["$title_tokens", tokens]}}]}}})
    else:
        stages.append({"$addFields": {"score": 0}})
    order = dict(_SORTS[sort])
    order["_id"] = 1
    stages.append({"$facet": {
        "items": [{"$sort": order}, {"$skip": (page - 1) * page_size}, {"$limit": page_size},
                  {"$project": {"search_tokens": 0, "title_tokens": 0}}],
        "total": [{"$count": "n"}],
    }})
    return stages
