-- Concepts the notes affirm for a patient that no Condition of that patient
-- codes: candidate care gaps for review. Only concepts that are condition codes
-- somewhere in the lake count, so a medication or a procedure named in a note
-- is not reported as a missing diagnosis.

with

note_mentions as (

    select * from {{ source('ml', 'note_mentions') }}

),

coded_conditions as (

    select * from {{ ref('stg_fhir__conditions') }}

),

condition_concepts as (

    select distinct
        code_system,
        code

    from coded_conditions

),

affirmed_mentions as (

    select
        note_mentions.patient_key,
        note_mentions.concept_system,
        note_mentions.concept_code,
        note_mentions.concept_name,
        note_mentions.document_id,
        note_mentions.model_id,
        note_mentions.cdb_version

    from note_mentions
    inner join condition_concepts
        on
            note_mentions.concept_system = condition_concepts.code_system
            and note_mentions.concept_code = condition_concepts.code

    where note_mentions.context = 'affirmed'

),

patient_codes as (

    select distinct
        patient_key,
        code_system,
        code

    from coded_conditions

),

final as (

    select
        affirmed_mentions.patient_key,
        affirmed_mentions.concept_system,
        affirmed_mentions.concept_code,
        min(affirmed_mentions.concept_name) as concept_name,
        count(*) as mention_count,
        count(distinct affirmed_mentions.document_id) as document_count,
        min(affirmed_mentions.model_id) as model_id,
        min(affirmed_mentions.cdb_version) as cdb_version

    from affirmed_mentions
    left join patient_codes
        on
            affirmed_mentions.patient_key = patient_codes.patient_key
            and affirmed_mentions.concept_system = patient_codes.code_system
            and affirmed_mentions.concept_code = patient_codes.code

    where patient_codes.patient_key is null

    group by
        affirmed_mentions.patient_key,
        affirmed_mentions.concept_system,
        affirmed_mentions.concept_code

)

select * from final
