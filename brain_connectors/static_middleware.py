"""WhiteNoise, usable in an async middleware chain.

WhiteNoiseMiddleware is sync-only, and one sync middleware makes Django run every request's
whole chain on its single thread-sensitive executor: under daphne that serialises all requests
(webhooks included) on one thread. This wrapper finds static files exactly as WhiteNoise does
(a dict lookup, or the finders with autorefresh) and otherwise passes the request on, async.
"""
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, *args, **kwargs):
        super().__init__(get_response, *args, **kwargs)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def _static_file(self, request):
        if self.autorefresh:
            return self.find_file(request.path_info)
        return self.files.get(request.path_info)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        static_file = self._static_file(request)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)
