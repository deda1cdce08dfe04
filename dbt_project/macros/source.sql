{#- Every source is a view the carelake plugin creates in DuckDB's in-memory catalog (bronze.*,
    ml.*), whichever yml declares it: resolve source() there, not in the marts database. A unit
    test's fixture (a CTE, no database) is left as it is. -#}
{% macro source(source_name, table_name) -%}
    {%- set relation = builtins.source(source_name, table_name) -%}
    {%- if relation.database -%}
        {%- set relation = relation.incorporate(path={"database": "memory"}) -%}
    {%- endif -%}
    {{ return(relation) }}
{%- endmacro %}
