-- One row per image and pathology from the newest run of each model, and one row per image that
-- has no result (skipped, or never scored) carrying the reason.

with

images as (

    select * from {{ source('ml', 'images') }}

),

findings as (

    select * from {{ source('ml', 'imaging_findings') }}

),

runs as (

    select distinct
        image_id,
        model_id,
        run_id,
        scored_at
    from findings

),

newest_runs as (

    -- a later run of the same model (new weights, say) replaces the earlier findings
    select
        image_id,
        model_id,
        run_id
    from runs
    qualify row_number() over (
        partition by image_id, model_id
        order by scored_at desc, run_id desc
    ) = 1

),

newest_findings as (

    select findings.*
    from findings
    inner join newest_runs
        on
            findings.image_id = newest_runs.image_id
            and findings.run_id = newest_runs.run_id

),

final as (

    select
        images.image_id,
        images.patient_key,
        images.series_instance_uid,
        images.sop_instance_uid,
        images.modality,
        images.body_part,
        images.view_position,
        images.content_type,
        newest_findings.pathology,
        newest_findings.probability,
        newest_findings.threshold,
        newest_findings.is_above_threshold,
        newest_findings.model_id,
        newest_findings.weights_sha256,
        newest_findings.run_id,
        newest_findings.scored_at,
        images.imported_at,
        coalesce(
            images.study_instance_uid, newest_findings.study_instance_uid
        ) as study_instance_uid,
        coalesce(newest_findings.status, 'not scored') as status,
        case
            when newest_findings.image_id is null
                then 'not scored yet: the vision stage has not run with weights in place'
            else newest_findings.reason
        end as reason,
        newest_findings.status = 'scored' as has_result
    from images
    left join newest_findings
        on images.image_id = newest_findings.image_id

)

select * from final
