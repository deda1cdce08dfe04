{#-
    Flattening FHIR JSON, one macro per pattern. Each takes a SQL expression that yields JSON text
    (usually the bronze `resource` column) and a JSONPath into it, and returns a SQL expression.
    Decimals are read as text and cast to decimal, never through a double.
-#}

{#- The code of the first coding in a CodeableConcept (or a list of them) with the given system. -#}
{% macro fhir_code(json, path, system) -%}
    json_extract_string(
        list_filter(
            coalesce(json_extract({{ json }}, '{{ path }}.coding[*]'), []),
            coding -> json_extract_string(coding, '$.system') = '{{ system }}'
        )[1],
        '$.code'
    )
{%- endmacro %}

{#- The display of that same coding. -#}
{% macro fhir_code_display(json, path, system) -%}
    json_extract_string(
        list_filter(
            coalesce(json_extract({{ json }}, '{{ path }}.coding[*]'), []),
            coding -> json_extract_string(coding, '$.system') = '{{ system }}'
        )[1],
        '$.display'
    )
{%- endmacro %}

{#- The code of the first coding, whatever its system (for required, single-system bindings). -#}
{% macro fhir_first_code(json, path) -%}
    json_extract_string({{ json }}, '{{ path }}.coding[0].code')
{%- endmacro %}

{#- The id a reference points at, when it reads `<resource_type>/<id>` (absolute URLs included);
    null for another type, a conditional reference (`Type?identifier=...`) or none. -#}
{% macro fhir_reference_id(json, path, resource_type) -%}
    nullif(
        regexp_extract(
            json_extract_string({{ json }}, '{{ path }}.reference'),
            '(?:^|/){{ resource_type }}/([A-Za-z0-9\-\.]{1,64})(?:/_history/[^/]+)?$',
            1
        ),
        ''
    )
{%- endmacro %}

{#- The first extension with the given url, as JSON; `path` points at the element holding
    `extension`. Nest it to reach a sub-extension (US Core race's `ombCategory`). -#}
{% macro fhir_extension(json, url, path='$') -%}
    list_filter(
        coalesce(json_extract({{ json }}, '{{ path }}.extension[*]'), []),
        extension -> json_extract_string(extension, '$.url') = '{{ url }}'
    )[1]
{%- endmacro %}

{#- The value of the first extension with the given url; `value_path` names the value element
    (`valueString`, `valueCoding.code`, ...). -#}
{% macro fhir_extension_value(json, url, value_path, path='$') -%}
    json_extract_string({{ fhir_extension(json, url, path) }}, '$.{{ value_path }}')
{%- endmacro %}

{#- Which type a choice element `<name>[x]` took (`Quantity`, `CodeableConcept`, `DateTime`, ...),
    among the types listed; null when absent. -#}
{% macro fhir_choice_type(json, path, name, types) -%}
    case
        {%- for type in types %}
        when json_exists({{ json }}, '{{ path }}.{{ name }}{{ type }}') then '{{ type }}'
        {%- endfor %}
    end
{%- endmacro %}

{#- A FHIR date or dateTime as text (`2013`, `2013-04`, `2013-04-02`, `2013-04-02T09:30:10Z`). -#}
{% macro fhir_date_text(json, path) -%}
    json_extract_string({{ json }}, '{{ path }}')
{%- endmacro %}

{#- The precision a FHIR date or dateTime was given with: year, month, day or time. -#}
{% macro fhir_date_precision(text) -%}
    case
        when {{ text }} is null then null
        when regexp_full_match({{ text }}, '\d{4}') then 'year'
        when regexp_full_match({{ text }}, '\d{4}-\d{2}') then 'month'
        when regexp_full_match({{ text }}, '\d{4}-\d{2}-\d{2}') then 'day'
        else 'time'
    end
{%- endmacro %}

{#- The first day a partial date covers (`2013` -> 2013-01-01); the date part of a dateTime. -#}
{% macro fhir_date_start(text) -%}
    case
        when regexp_full_match({{ text }}, '\d{4}') then try_cast({{ text }} || '-01-01' as date)
        when regexp_full_match({{ text }}, '\d{4}-\d{2}') then try_cast({{ text }} || '-01' as date)
        else try_cast(left({{ text }}, 10) as date)
    end
{%- endmacro %}

{#- A dateTime or instant as a UTC timestamp; a partial date maps to the start it covers. -#}
{% macro fhir_timestamp(text) -%}
    case
        when {{ fhir_date_precision(text) }} = 'time' then try_cast({{ text }} as timestamptz)
        else cast({{ fhir_date_start(text) }} as timestamptz)
    end
{%- endmacro %}

{#- A FHIR decimal as an exact decimal(18, 6), read from the JSON text. -#}
{% macro fhir_decimal(json, path) -%}
    try_cast(json_extract_string({{ json }}, '{{ path }}') as decimal(18, 6))
{%- endmacro %}

{#- The UCUM code of a Quantity: its `code` when `system` is UCUM, else null. -#}
{% macro fhir_ucum_code(json, path) -%}
    case
        when json_extract_string({{ json }}, '{{ path }}.system') = 'http://unitsofmeasure.org'
            then json_extract_string({{ json }}, '{{ path }}.code')
    end
{%- endmacro %}
