"""The API's pagination: DRF's limit/offset, but a bad `limit` or `offset` is refused.

DRF falls back to the defaults when `?limit=` or `?offset=` is not a whole number, so a typo
returns another page than the one asked for, without a word. Here it is a 400 naming the
parameter, like every other invalid query, and the schema states the bounds.

`limit` is at most settings.API_MAX_PAGE_SIZE: without a bound one request could ask for every
row at once (30,000 deliveries, 9 MB). Above it is a 400 too, not DRF's silent clamp, so a client
never mistakes a short page for the end of the list.
"""
import re

from django.conf import settings
from django.db import transaction
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.settings import api_settings

from brain_connectors.shared.errors import ServiceError, ValidationFailed

WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
MAXIMUM = 999_999_999


def whole_number(params, name, minimum, maximum=MAXIMUM):
    """The query parameter `name` as an int from `minimum` to `maximum`, or a 400 naming the bounds."""
    text = params[name]
    # Digits only: int() would also take " 5", "+5" and "5_0".
    if not WHOLE_NUMBER.fullmatch(text) or not minimum <= int(text) <= maximum:
        bounds = f"at least {minimum}" if maximum == MAXIMUM else f"from {minimum} to {maximum}"
        raise ValidationFailed(f"{name} must be a whole number {bounds}.", details={name: f"must be {bounds}"})
    return int(text)


class StrictLimitOffsetPagination(LimitOffsetPagination):
    @property
    def max_limit(self):
        return settings.API_MAX_PAGE_SIZE

    def get_limit(self, request):
        if self.limit_query_param not in request.query_params:
            return self.default_limit
        return whole_number(request.query_params, self.limit_query_param, 1, self.max_limit)

    def get_offset(self, request):
        if self.offset_query_param not in request.query_params:
            return 0
        return whole_number(request.query_params, self.offset_query_param, 0)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, MAXIMUM)}
        for parameter in parameters:
            minimum, maximum = bounds[parameter["name"]]
            parameter["schema"].update(minimum=minimum, maximum=maximum)
            if parameter["name"] == self.limit_query_param:
                parameter["description"] = f"Number of results to return per page (1-{maximum})."
        return parameters


class PaginatedListMixin:
    # Paging for a plain ViewSet whose list comes from a service function's queryset.
    #
    # `pagination_class` is named on the view so that drf-spectacular documents the paginated
    # envelope; `paginated_response` pages and serialises the queryset.
    # A comment, not a docstring: drf-spectacular would publish a docstring inherited by a view as the
    # description of each of its operations (tests/project/test_api_docs.py).

    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    def paginated_response(self, request, queryset, serializer_class):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)

    def paginated_read(self, request, read, serializer_class):
        # `read()` is the audited service call returning the queryset: its audit row and the page are in one
        # transaction. A refusal of the service (its own `failure` or `denied` row, nothing else written) commits
        # that row and is raised after the block, which would otherwise roll the row back with it.
        with transaction.atomic():
            try:
                queryset = read()
            except ServiceError as exc:
                refused = exc
            else:
                return self.paginated_response(request, queryset, serializer_class)
        raise refused
