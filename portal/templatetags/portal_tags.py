from django import template

register = template.Library()


@register.filter
def commit_url(function, sha: str) -> str:
    return function.commit_url(sha)
