-- The last cutover recorded in edu_v2: when, and the comment edu had before it was marked.
SELECT at, detail ->> 'edu_comment' FROM migration.system_of_record
WHERE event = 'cutover' ORDER BY id DESC LIMIT 1
