{#- Post-hook of incremental marts: delete the rows whose key the upstream model no longer has
    (a resource deleted in the lake, or a patient erased), so a mart never outlives its source.
-#}
{% macro delete_rows_missing_upstream(target_relation, key, upstream_relation, upstream_key) -%}
    delete from {{ target_relation }}
    where {{ key }} not in (select {{ upstream_key }} from {{ upstream_relation }})
{%- endmacro %}
