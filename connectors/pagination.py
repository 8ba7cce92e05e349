"""The API's pagination: DRF's limit/offset, but a bad `limit` or `offset` is refused.

DRF falls back to the defaults when `?limit=` or `?offset=` is not a whole number, so a typo
returns another page than the one asked for, without a word. Here it is a 400 naming the
parameter, like every other invalid query, and the schema states the bounds.
"""
import re

from rest_framework.pagination import LimitOffsetPagination
from rest_framework.settings import api_settings

from .exceptions import ValidationFailed

WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
MAXIMUM = 999_999_999


def _whole_number(request, name, minimum):
    text = request.query_params[name]
    # Digits only: int() would also take " 5", "+5" and "5_0".
    if not WHOLE_NUMBER.fullmatch(text) or int(text) < minimum:
        raise ValidationFailed(f"{name} must be a whole number of at least {minimum}.", details={name: "invalid"})
    return int(text)


class StrictLimitOffsetPagination(LimitOffsetPagination):
    def get_limit(self, request):
        if self.limit_query_param not in request.query_params:
            return self.default_limit
        limit = _whole_number(request, self.limit_query_param, 1)
        return min(limit, self.max_limit) if self.max_limit else limit

    def get_offset(self, request):
        if self.offset_query_param not in request.query_params:
            return 0
        return _whole_number(request, self.offset_query_param, 0)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        minimum = {self.limit_query_param: 1, self.offset_query_param: 0}
        for parameter in parameters:
            parameter["schema"].update(minimum=minimum[parameter["name"]], maximum=MAXIMUM)
        return parameters


class PaginatedListMixin:
    """Paging for a plain ViewSet whose list comes from a service function's queryset.

    `pagination_class` is named on the view so that drf-spectacular documents the paginated
    envelope; `paginated_response` pages and serialises the queryset."""

    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    def paginated_response(self, request, queryset, serializer_class):
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)
