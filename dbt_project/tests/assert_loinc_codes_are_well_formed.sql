-- Data quality: a code labelled LOINC must look like one (digits, a hyphen, a check digit; or an
-- LP/LA/LG/LL part or answer code). Some sources label other code systems as LOINC (the CIEL
-- concepts of the fhir-data-pipes HIV bundles): such rows are kept as written and reported here,
-- never silently trusted.
{{ config(severity='warn') }}

with

observations as (
    select * from {{ ref('stg_fhir__observations') }}
),

malformed as (
    select
        observation_id,
        loinc_code
    from observations
    where
        loinc_code is not null
        and not regexp_full_match(loinc_code, '(L[APGL])?[0-9]{1,7}-[0-9]')
)

select * from malformed
